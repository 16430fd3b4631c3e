"""The cell contract and the record store: CellSpec in, CellRecord out, cells.jsonl. No torch."""
