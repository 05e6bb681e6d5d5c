"""The web console every node serves at ``/``: one management plane on any node.

Theory of operation. The console is server-rendered HTML (aiohttp-jinja2 templates), a
stylesheet and two vendored scripts (htmx and its server-sent-events extension); no
JavaScript build step, and every page reads and every form works without JavaScript.

* ``session``: which paths are the console's, the session cookie that carries an API
  token, and the same-origin check every form POST passes (CSRF).
* ``web``: the app setup, the middleware that turns refusals into pages (no token: the
  login page; too low a role: a 403 page), and the page handlers. They call the same
  in-process functions as the API's handlers, never the API over HTTP.
* ``stream``: ``/console/stream``, the summary fragment as server-sent events.
* ``units``: the template filters (GiB, ISO times, state badges).

Who may do what is the API's rule: ``nodes.api_access.check_access`` checks the cookie's
token exactly like a bearer token, and ``fabric.tokens.required_role`` gives a console
form the role of the API call it makes.
"""
