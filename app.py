"""The WSGI object gunicorn serves (`gunicorn -c gunicorn.conf.py app:app`)."""
from ridesync.gateway import create_app

app = create_app()
