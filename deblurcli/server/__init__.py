"""``deblur serve``: a local web page and HTTP API over the same Session, runner stages and writer as the CLI.

Photographers judge a deblur by looking at it, before and after at 100 %, so the server exists to show
that; everything it writes is made by the code the CLI runs, so a downloaded file has the same bytes as
``deblur photo.jpg -o out.jpg`` with the same settings.

The pieces:

* :mod:`.jobs` -- the photo queue: one worker thread runs one photo at a time (a CPU has no spare cores
  for a second one, and a GPU no spare memory), through :mod:`deblurcli.runner`'s read, model and write
  stages, with one cached :class:`~deblurcli.session.Session` per setting. Each photo lives in a private
  temporary folder under names the server chooses; the folder is removed when the photo is done with.
* :mod:`.app` -- the Starlette application: the page, its static files (package data, no CDN) and the
  JSON/multipart API, with a cap on the request size.
* ``static/`` -- the page: plain HTML, CSS and JavaScript, no build step, works offline.

Why Starlette + uvicorn: both are small, pure Python (uvicorn without its ``[standard]`` extra runs on
h11), widely used and maintained, and the ASGI model lets the server notice a client that went away
while its photo waits or runs (the photo is then cancelled) without a thread per request. FastAPI would
add pydantic for a handful of form fields; aiohttp brings several compiled dependencies and its own
client; Flask/WSGI would tie a thread to every waiting request.
"""
