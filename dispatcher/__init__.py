"""The dispatcher: turns queued jobs into stacks, within the capacity the operator allows."""
