//! Host↔agent protocol of rvm: message types and framing shared by both ends.
