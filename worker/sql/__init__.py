"""The business function "sql": one SELECT over the job's own input files in DuckDB, external access off.

``worker.sql.function`` is the plug-in the API imports (pydantic and ``shared`` only); ``worker.sql.engine``
imports DuckDB and runs on the instance.
"""
