"""RQ jobs, the worker class and the scheduler's registration of periodic jobs."""
