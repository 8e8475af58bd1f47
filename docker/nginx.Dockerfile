# Debian's nginx with the WebDAV extension module, as scripts/servers installs it.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light libnginx-mod-http-dav-ext \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
COPY nginx.conf /etc/nginx/ckptio.conf
CMD ["nginx", "-c", "/etc/nginx/ckptio.conf", "-g", "daemon off;"]
