//! The JSON report: the whole run, versioned ([`crate::report::REPORT_VERSION`], schema in
//! `schemas/report.schema.json`). Written to the output directory by every run, and printed on
//! stdout with `--output json`.

use super::{Destination, View, ViewContext, json_output};
use crate::report::Report;

pub struct Json;

impl View for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn about(&self) -> &'static str {
        "the JSON report itself"
    }

    fn destinations(&self, ctx: &ViewContext) -> Vec<Destination> {
        let mut to = vec![Destination::ReportFile];
        if json_output(ctx.ui) {
            to.push(Destination::Result);
        }
        to
    }

    fn render(&self, report: &Report, _: &ViewContext) -> String {
        match serde_json::to_string_pretty(report) {
            Ok(json) => json + "\n",
            Err(e) => format!("{{\"error\": \"cannot serialize the report: {e}\"}}\n"),
        }
    }
}
