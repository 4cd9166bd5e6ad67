"""gunicorn settings for the web tests: two workers, each its own tribes member (tribes.prefork)."""

from tribes.prefork import post_fork, worker_exit  # noqa: F401 - gunicorn calls these hooks

preload_app = True  # the app and its (unstarted) Cluster are imported once, in the master
workers = 2
worker_class = "sync"
timeout = 30
graceful_timeout = 5
loglevel = "warning"
