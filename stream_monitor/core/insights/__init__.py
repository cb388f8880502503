"""Retraining insight (seeds 000 and 001): should the model be retrained now, and on which data?

Built on the same mergeable sketches as the detectors:

- :mod:`.buckets` — per model, one counts-only profile per bucket of event time (default: the
  model's window width, at least a day; weeks start on Monday);
- :mod:`.dna` — the bucket × bucket drift matrix ("data DNA") and its regimes (normal, recurring,
  trend, one-off, emerging), cut where the buckets' own noise ends;
- :mod:`.incidents` — buckets whose missing / out-of-range / new-category rates or volume jump;
- :mod:`.segments` — drift per segment with its traffic share, and the surge of a new or small segment;
- :mod:`.recommend` — which buckets to train on, which to exclude and why, and when enough labels exist;
- :mod:`.tracker` — the per-model object the monitor feeds (pure, snapshot/restore);
- :mod:`.status` — the status page; :mod:`.store` — save/load bucket profiles to a folder;
- :mod:`.planner` — the offline planner behind ``stream-monitor plan``.
"""
