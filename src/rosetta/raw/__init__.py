"""The landing zone: raw documents as received from every source, read only by batches."""
