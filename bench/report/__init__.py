"""Reports of results: markdown/CSV tables, matplotlib plots, the HTML page and its Plotly figures."""
