"""The serving side of imcap: what ``python -m imcap.serve`` builds around one :class:`imcap.inference.Captioner`.

- :mod:`imcap.serving.batching`: the request queue and the one worker thread that owns the Captioner; requests that
  arrive together share one beam search per :class:`imcap.search_options.SearchOptions`;
- :mod:`imcap.serving.uploads`: uploaded image bytes: size and pixel limits, format sniffed, decoded in memory;
- :mod:`imcap.serving.http_api`: the JSON API (FastAPI): options, multipart, status codes;
- :mod:`imcap.serving.web_page`: the Gradio page, mounted on the API's app.

None of them imports a command-line module; ``imcap.serve`` parses the options and builds them.
"""
