"""The Scenario API: the client and its models (Job, Asset, Upload), the rate and in-flight
limits, uploads, bulk asset lookups, reconciling unsure submissions, a job's outcome.
"""
