"""`latentdiff serve`: AUTOMATIC1111's HTTP API and a web page, thin over pipeline.py.

settings.py   what the server is started with (model, models folder, API key, limits)
schemas.py    A1111's request and response fields
generate.py   request -> pipeline -> PNGs with the CLI's `parameters` text
worker.py     the one thread that owns the model: a queue, progress, interruption
preview.py    live previews from the sampler's x0
api.py        the /sdapi/v1 routes;  app.py: the app, body-size limit, errors, the page (static/)
cli.py        the `serve` subcommand

Nothing is imported here, so `latentdiff` commands other than `serve` never load the web stack:
`from latentdiff.serve.app import create_app`.
"""
