"""The business function "sql": one SELECT over the job's own input files in DuckDB, external access off.

``pijobs.worker.sql.function`` is the plug-in the API imports (pydantic and ``pijobs.shared`` only);
``pijobs.worker.sql.engine`` imports DuckDB and runs on the instance.
"""
