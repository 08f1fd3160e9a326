//! Test bed
