"""gunicorn settings of the WebAdmin service; debian/archivista-mail.service and the tests load this file.

    gunicorn --config python:webadmin.gunicorn_conf --bind 127.0.0.1:8090 'webadmin:create_app()'

Threaded workers: a slow or half-sent request holds one thread, not a whole worker, so a few
such clients (or a connection test waiting for a silent server) cannot starve WebAdmin.
Each thread keeps its own database connections (webadmin._per_worker).
"""

worker_class = "gthread"
workers = 2
threads = 8
timeout = 90  # a connection test may wait network_timeout (60 s by default) for a server
graceful_timeout = 10
keepalive = 5
