"""What a person reads: plotly figures (``viz``), the HTML report and the metrics files
(``report``) and results, settings and worked pairs in sentences (``explain``)."""
