//! What a run leaves behind: a table per suite on stdout, a JSON results file, an SVG chart
//! per suite, and optionally a comparison with an earlier run.

pub(crate) mod chart;
pub(crate) mod compare;
pub(crate) mod json;
pub(crate) mod table;
