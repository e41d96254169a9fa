//! Stream edges at run time. Pipes and socketpairs need no engine code once
//! created (the kernel moves the data); queues go through [`broker`], which
//! does the reads and writes, and keep their books in [`ledger`], which
//! touches no descriptor.

pub mod broker;
pub mod ledger;
