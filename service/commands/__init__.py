"""What the commands print.

``report`` renders plan rows, ``explain`` and ``status``; ``plot`` the chart.
"""
