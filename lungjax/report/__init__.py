"""What an evaluation writes: metrics.json, report.md and plots (markdown), report.html (report_html), the
model card (model_card)."""
