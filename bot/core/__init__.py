"""How a command lives: chat, dispatch, approvals, jobs, scheduler, store, web."""
