"""The worker that runs on a job's instance: compute, upload, record, release, delete own stack."""
