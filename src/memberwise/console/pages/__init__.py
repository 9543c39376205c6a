"""The console's pages: one router module a page (see /work docs/console.md, "Adding a page")."""
