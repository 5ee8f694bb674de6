FROM python:3.11-slim
WORKDIR /srv/baton
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# What goes into the image is what .dockerignore lets through: no .venv, no .git.
COPY . .
ENV PYTHONUNBUFFERED=1
# Not root: nothing Baton does needs it.
RUN useradd --system --uid 10001 --no-create-home baton
USER baton
# The site's own /healthz (public), with the Python the image already has.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5000'), timeout=2)"]
# The Procfile's web command in exec form: gunicorn is PID 1 and gets
# `docker stop`'s SIGTERM itself (a shell in between would swallow it), and
# reaps every orphan as PID 1 must (its master waits on any child).
CMD ["gunicorn", "-c", "app/gunicorn_conf.py", "app:create_app()"]
