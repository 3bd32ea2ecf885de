# archivista-mail: cron starts the importer every minute, as the service user; it runs only when
# the import interval (import_interval_minutes in /etc/archivista-mail/archivista-mail.conf, or the
# Import page in WebAdmin; default 10) has passed, under the importer's lock. Quiet unless something failed.
* * * * * archivista-mail [ -x /usr/bin/archivista-mail ] && /usr/bin/archivista-mail import --scheduled
