"""The run engine: one probe run, from SMTP submission to IMAP confirmation."""
