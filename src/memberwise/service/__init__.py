"""The service desk: tickets, tier SLAs on business calendars, routing, authority and
compensation, after-sales requests and express refunds (see docs/service.md)."""
