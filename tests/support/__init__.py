"""Helpers shared by the tests: waiting (eventually), building (factories), enrolling,
reading journeys and the mail the SMTP sink received."""
