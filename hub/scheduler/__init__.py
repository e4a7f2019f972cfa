"""Work on a clock, not on arrival: data-sync jobs and sweeps, run by one leader across all hub processes.

`jobs.py` registers each job by name; `runner.py` runs them on their schedules (APScheduler with its job store
in the hub's database, under the leader lock) and records every run in the store (`runs.py`).
"""
