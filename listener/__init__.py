"""The MQTT ingestion process: every device message in, validated, stored in batches."""
