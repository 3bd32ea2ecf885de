# archivista-mail: import new mail every 10 minutes, as the service user, under the importer's
# lock (a run still busy makes the next one exit at once). Quiet unless something failed.
*/10 * * * * archivista-mail [ -x /usr/bin/archivista-mail ] && /usr/bin/archivista-mail import
