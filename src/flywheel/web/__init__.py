"""The web pages (an edge, like the server and the CLI): the review UI and the
dashboard under ``/ui/``, over the same functions as the CLI."""
