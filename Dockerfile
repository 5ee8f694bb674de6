FROM python:3.11-slim
WORKDIR /srv/baton
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV PYTHONUNBUFFERED=1
# The Procfile's web command; docker-compose.yml sets the same one explicitly.
CMD ["sh", "-c", "gunicorn -c app/gunicorn_conf.py 'app:create_app()'"]
