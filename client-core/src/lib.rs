//! Gatehouse client core: profiles and keys, the connection manager that drives the engine's
//! client state machines over UDP/TCP and a TUN device, and the privileged client service the
//! CLI and desktop app talk to. Built out in the client-core issue; today only the command
//! surface exists and says what is not implemented yet.
