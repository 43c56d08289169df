"""Development mail: a local SMTP sink and a page to read what it received."""
