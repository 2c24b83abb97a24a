"""The review desk: a small server-rendered web app where editors read, compare, approve and publish.

It runs beside the Dagster UI (`make ui` starts both; `pipeline desk --host 127.0.0.1 --port 3001` alone)
over the same store and the same review gate as `pipeline review`: `actions` calls `pipeline.review` and
`pipeline.publishing`, never a copy of them. `pages` are the HTML pages (Jinja2 templates, one small
script, no build step), `api` the JSON API for other tools, `auth` sign-in, sessions and CSRF, `config`
users and tokens from the environment, `views` what a page shows, `diff` the word-level A/B diff.
"""

from pipeline.desk.app import create_app

__all__ = ["create_app"]
