"""Real-data evaluation of stream-monitor: ``python -m evaluation`` writes EVALUATION.md.

``datasets`` loads time-ordered data sets shipped inside pip packages, ``cases`` pairs each with a
model and a monitor configuration, ``runner`` drives the real command line, ``truth`` decides what is
true without stream-monitor, ``verdict`` compares the two, ``report`` renders the table. ``insight`` runs
``stream-monitor plan`` and ``insights dna`` on some cases and ``insight_truth`` computes their decay
horizon and regimes again without stream-monitor.
"""
