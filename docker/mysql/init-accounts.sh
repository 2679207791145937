#!/bin/bash
# Run once by the mysql image's entrypoint on an empty datadir: the orch and repl
# accounts (README, Accounts, MySQL 8.4). The passwords are read from the secrets and
# fed to the client on stdin, never on its command line.
set -euo pipefail
sql_string() { local s; s=$(cat "$1"); s=${s//\\/\\\\}; s=${s//\'/\\\'}; printf "'%s'" "$s"; }
orch_pw=$(sql_string /run/secrets/orch_password)
repl_pw=$(sql_string /run/secrets/repl_password)
docker_process_sql <<SQL
SET sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'orch'@'%' IDENTIFIED BY ${orch_pw};
GRANT SYSTEM_VARIABLES_ADMIN, REPLICATION_SLAVE_ADMIN, REPLICATION CLIENT, RELOAD, PROCESS, CONNECTION_ADMIN ON *.* TO 'orch'@'%';
GRANT CREATE, INSERT, SELECT ON orch_meta.* TO 'orch'@'%';
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY ${repl_pw};
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
SQL
