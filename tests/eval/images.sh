#!/usr/bin/env bash
# Builds one application image of the application evaluation (tests/eval_apps.rs) from this
# machine's Debian packages, without any registry: the server binaries, the shared libraries
# `ldd` names for them, their configuration and data, a static busybox (the shell and tools a
# Debian base image would have, and the attacker's tools), the test's `actions` helper at
# /usr/local/sbin/eval-actions (a tool the attacker brings; never run during learning), then
# `docker import`. The image tag is a hash of this script, the helper and the package versions:
# an image already built from the same inputs is reused.
#
#   tests/eval/images.sh APP ACTIONS_BINARY     APP: nginx | redis | postgres | pyapp | neighbour
#
# Prints the image name (habitd-eval/APP:HASH) as its last line; HABITD_EVAL_IMAGE_PREFIX
# replaces `habitd-eval` (two evaluations on one machine must not share workload keys). Needs root (chown), Docker,
# busybox-static and the packages nginx, redis-server, postgresql-15, python3.
set -euo pipefail

app=${1:?usage: images.sh APP ACTIONS_BINARY}
actions=${2:?usage: images.sh APP ACTIONS_BINARY}
self=$(readlink -f "$0")

need_pkg() {
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || {
      echo "images.sh: package $p is missing: apt-get install $p" >&2
      exit 1
    }
  done
}

need_pkg busybox-static
case $app in
  nginx) need_pkg nginx ;;
  redis) need_pkg redis-server redis-tools ;;
  postgres) need_pkg postgresql-15 ;;
  pyapp) need_pkg python3.11 ;;
  neighbour) ;;
  *) echo "images.sh: unknown application $app" >&2; exit 2 ;;
esac

versions=$(dpkg-query -W -f '${Package}=${Version}\n' busybox-static nginx redis-server \
  postgresql-15 python3.11 2>/dev/null || true)
hash=$( (cat "$self"; sha256sum <"$actions"; echo "$versions"; echo "$app") | sha256sum | cut -c1-12)
image="${HABITD_EVAL_IMAGE_PREFIX:-habitd-eval}/$app:$hash"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

root=$(mktemp -d /tmp/habitd-eval-rootfs.XXXXXX)
chmod 755 "$root"
trap 'rm -rf "$root"' EXIT
cd "$root"

# ---- the base every image shares ------------------------------------------------------------
mkdir -p bin sbin usr/bin usr/sbin usr/local/bin usr/local/sbin etc tmp var/tmp var/log run \
  root/.ssh dev proc sys lib64 lib/x86_64-linux-gnu mnt opt srv
chmod 1777 tmp var/tmp
cp /bin/busybox bin/busybox
for a in sh ash cat ls ps sleep wget nc echo id true false grep head tail cp mv rm chmod chown \
  mkdir date hostname uname find tar gzip gunzip zcat kill killall touch env sed awk mkfifo \
  telnet netstat ifconfig ip setpriv nsenter unshare timeout stat readlink seq sort wc tr dd \
  base64 xargs printf test expr basename dirname; do
  ln -sf busybox "bin/$a"
done
cp "$actions" usr/local/sbin/eval-actions
chmod 755 usr/local/sbin/eval-actions
cat >etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
redis:x:104:108::/var/lib/redis:/bin/false
postgres:x:101:104:PostgreSQL administrator:/var/lib/postgresql:/bin/sh
app:x:1000:1000:app:/srv/app:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >etc/group <<'EOF'
root:x:0:
www-data:x:33:
redis:x:108:
postgres:x:104:
app:x:1000:
nogroup:x:65534:
EOF
cat >etc/shadow <<'EOF'
root:$6$eval$1GvVbC7jv8w3yv1m0lqk0OjY8Fj3cXv8Y0m6bN0k9yW9dZ1:19700:0:99999:7:::
www-data:*:19700:0:99999:7:::
redis:*:19700:0:99999:7:::
postgres:*:19700:0:99999:7:::
app:!:19700:0:99999:7:::
EOF
chmod 640 etc/shadow
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >etc/nsswitch.conf
echo "$app" >etc/hostname
# A key an attacker would look for (credential access), never read by the application.
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nZXZhbHVhdGlvbiBrZXksIG5vdCBhIHJlYWwgb25l\n-----END OPENSSH PRIVATE KEY-----\n' \
  >root/.ssh/id_rsa
chmod 700 root/.ssh
chmod 600 root/.ssh/id_rsa

# Copies host files (and the libraries ldd names for each) into the root.
copy_with_libs() {
  for f in "$@"; do
    mkdir -p ".$(dirname "$f")"
    cp -L "$f" ".$f"
    ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      [ -e ".$lib" ] || { mkdir -p ".$(dirname "$lib")"; cp -L "$lib" ".$lib"; }
    done || true
  done
}

change=()
case $app in
# ---- nginx: a static site and a reverse proxy to the Python backend ---------------------------
nginx)
  copy_with_libs /usr/sbin/nginx
  mkdir -p etc/nginx/conf.d var/log/nginx var/lib/nginx/body var/lib/nginx/proxy var/www/html \
    var/cache/nginx
  cp /etc/nginx/mime.types etc/nginx/
  cat >etc/nginx/nginx.conf <<'EOF'
user www-data;
worker_processes 2;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 15;
    client_body_temp_path /var/lib/nginx/body;
    proxy_temp_path /var/lib/nginx/proxy;
    include /etc/nginx/conf.d/*.conf;
}
EOF
  cat >etc/nginx/conf.d/site.conf <<'EOF'
server {
    listen 80;
    root /var/www/html;
    index index.html;
    resolver 127.0.0.11 valid=10s ipv6=off;
    set $backend http://backend:8000;
    location / { try_files $uri $uri/ =404; }
    location /api/ { proxy_pass $backend; proxy_set_header Host $host; }
    location = /healthz { access_log off; return 200 "ok\n"; }
}
EOF
  for i in $(seq 1 20); do
    echo "<html><body><h1>page $i</h1><p>static content $i</p></body></html>" >"var/www/html/page$i.html"
  done
  echo '<html><body><h1>habitd eval</h1><a href="page1.html">1</a></body></html>' >var/www/html/index.html
  head -c 65536 /dev/urandom | base64 >var/www/html/big.txt
  chown -R 33:33 var/lib/nginx var/cache/nginx
  change=(--change 'CMD ["/usr/sbin/nginx", "-g", "daemon off;"]' --change 'EXPOSE 80')
  ;;
# ---- redis: the server with a config file, as user redis ----------------------------------------
redis)
  copy_with_libs /usr/bin/redis-server /usr/bin/redis-cli
  mkdir -p etc/redis var/lib/redis var/log/redis
  cat >etc/redis/redis.conf <<'EOF'
bind 0.0.0.0
port 6379
protected-mode no
daemonize no
dir /var/lib/redis
dbfilename dump.rdb
logfile /var/log/redis/redis-server.log
save 60 1000
appendonly no
# The vulnerable deployment of the catalogue's `redis-config-dir` (CONFIG SET dir; SAVE): redis 7
# refuses to change `dir` at run time unless protected configs are enabled, and the classic
# attack writes where only root may, so the server runs as root (no USER), as many do.
enable-protected-configs yes
EOF
  chown -R 104:108 var/lib/redis var/log/redis etc/redis
  change=(--change 'CMD ["/usr/bin/redis-server", "/etc/redis/redis.conf"]' --change 'EXPOSE 6379')
  ;;
# ---- postgres: Debian's server binaries, a cluster made by initdb, run as user postgres ---------
postgres)
  bindir=/usr/lib/postgresql/15/bin
  copy_with_libs $bindir/postgres $bindir/initdb $bindir/pg_ctl $bindir/pg_dump $bindir/psql \
    $bindir/pg_isready
  tar -C / --exclude='usr/lib/postgresql/15/lib/bitcode' --exclude='*llvmjit*' \
    -cf - usr/lib/postgresql/15/lib | tar -xf -
  mkdir -p usr/share/postgresql
  cp -a /usr/share/postgresql/15 usr/share/postgresql/
  mkdir -p usr/share
  cp -a /usr/share/zoneinfo usr/share/
  mkdir -p var/lib/postgresql/data var/run/postgresql var/log/postgresql var/backups/pg
  chown -R 101:104 var/lib/postgresql var/run/postgresql var/log/postgresql var/backups/pg
  chmod 700 var/lib/postgresql/data
  # initdb on the host (as the host's postgres user, same ids as in the image), into the root.
  host_uid=$(id -u postgres)
  chown -R "$host_uid" var/lib/postgresql
  su postgres -s /bin/sh -c "$bindir/initdb -D $root/var/lib/postgresql/data -U postgres \
    --auth=trust --locale=C -E UTF8" >/dev/null
  cat >>var/lib/postgresql/data/postgresql.conf <<'EOF'
listen_addresses = '*'
unix_socket_directories = '/var/run/postgresql'
logging_collector = on
log_directory = '/var/log/postgresql'
log_filename = 'postgresql.log'
log_connections = on
max_connections = 50
shared_buffers = 32MB
# The evaluation compresses time (5-s learning intervals for the default 1 m): postgres's own
# periodic work is compressed alike, so that learning sees its cycles as a real one of hours
# sees hundreds (defaults: a checkpoint every 5 min, autovacuum every minute; a 90-s learning
# saw neither, and the first of each in detection was a burst of writes).
checkpoint_timeout = 30s
autovacuum_naptime = 10s
EOF
  echo 'host all all 0.0.0.0/0 trust' >>var/lib/postgresql/data/pg_hba.conf
  chown -R 101:104 var/lib/postgresql
  change=(--change "ENV PATH=$bindir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --change 'ENV PGDATA=/var/lib/postgresql/data' --change 'USER postgres'
    --change "CMD [\"$bindir/postgres\", \"-D\", \"/var/lib/postgresql/data\"]" --change 'EXPOSE 5432')
  ;;
# ---- pyapp: a JSON service of our own, standard library only ------------------------------------
pyapp)
  copy_with_libs /usr/bin/python3.11
  ln -sf python3.11 usr/bin/python3
  mkdir -p usr/lib
  tar -C /usr/lib --exclude=python3.11/test --exclude=python3.11/idlelib \
    --exclude=python3.11/tkinter --exclude=python3.11/turtledemo --exclude=python3.11/ensurepip \
    --exclude=python3.11/lib2to3 --exclude='*/__pycache__/*.opt-*' --exclude=python3.11/config-3.11-x86_64-linux-gnu \
    -cf - python3.11 | tar -C usr/lib -xf -
  for so in /usr/lib/python3.11/lib-dynload/*.so; do
    ldd "$so" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      [ -e ".$lib" ] || { mkdir -p ".$(dirname "$lib")"; cp -L "$lib" ".$lib"; }
    done || true
  done
  mkdir -p srv/app var/log/app var/lib/app etc/app
  cat >etc/app/app.ini <<'EOF'
[app]
greeting = hello
page_size = 20
EOF
  cat >srv/app/app.py <<'EOF'
"""A small JSON service (standard library only): items in memory, persisted to
/var/lib/app/items.json, an access log reopened after rotation, config reloaded on SIGHUP."""
import configparser
import http.server
import json
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time

CONFIG = "/etc/app/app.ini"
STATE = "/var/lib/app/items.json"
log = logging.getLogger("app")
items = {}
lock = threading.Lock()
config = configparser.ConfigParser()


def load_config(*_):
    config.read(CONFIG)
    log.info("config loaded: greeting=%s", config.get("app", "greeting", fallback="?"))


def persist():
    while True:
        time.sleep(5)
        with lock:
            data = json.dumps(items)
        tmp = STATE + ".tmp"
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, STATE)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.removeprefix("/api")
        if path == "/healthz":
            return self.reply(200, {"ok": True})
        if path.startswith("/items"):
            with lock:
                page = list(items.items())[-config.getint("app", "page_size", fallback=20):]
            return self.reply(200, {"greeting": config.get("app", "greeting"), "items": page})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(n) if n else b"{}"
        try:
            obj = json.loads(body or b"{}")
        except ValueError:
            return self.reply(400, {"error": "bad json"})
        with lock:
            key = str(len(items) + 1)
            items[key] = obj
        self.reply(201, {"id": key})

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)


def compact():
    """The periodic job: rewrites the state file without empty items."""
    try:
        with open(STATE) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data = {k: v for k, v in data.items() if v}
    with open(STATE + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(STATE + ".tmp", STATE)
    print(f"compacted {len(data)} items")


def main():
    if "--compact" in sys.argv:
        return compact()
    handler = logging.handlers.WatchedFileHandler("/var/log/app/access.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    load_config()
    signal.signal(signal.SIGHUP, load_config)
    threading.Thread(target=persist, daemon=True).start()
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
EOF
  chown -R 1000:1000 srv/app var/log/app var/lib/app
  change=(--change 'CMD ["/usr/bin/python3", "/srv/app/app.py"]' --change 'USER app'
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' --change 'EXPOSE 8000')
  ;;
# ---- neighbour: another application (busybox httpd) that starts and learns beside the others ----
neighbour)
  mkdir -p www
  ln -sf busybox bin/httpd
  echo neighbour >www/index.html
  change=(--change 'CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]')
  ;;
esac

# The dynamic loader, wherever ldd put it.
[ -e lib64/ld-linux-x86-64.so.2 ] || cp -L /lib64/ld-linux-x86-64.so.2 lib64/ 2>/dev/null || true

# (postgres sets its own PATH after the generic one: docker applies --change in order.)
tar -C "$root" -cf - . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "${change[@]}" - "$image" >/dev/null
echo "$image"
