"""The end of an artifact's life: references, delete and expiry, retention, gc, purge, export.

The one package that knows every table holding a blob URI."""
