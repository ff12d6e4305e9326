"""Acquisition and curation: sources, downloader, verification, store, state DB, dedup, splits, reports.

Never imports TensorFlow.
"""
