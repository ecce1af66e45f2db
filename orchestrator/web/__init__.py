"""The portal: server-rendered pages (Jinja2, no JavaScript) for researchers and staff.

`portal.install_portal(app, settings)` mounts it into the app factory; the pages live in
`pages_auth`, `pages_account` and `pages_admin`; `rendering` owns templates, language and CSP.
"""
