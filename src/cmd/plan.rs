//! `plan`: the resolved services, their images, dependency order and base images (or a
//! matrix for GitHub Actions), and the cache key as step outputs.

use std::path::PathBuf;

use crate::actions_env::ActionsEnv;
use crate::cli::{GlobalArgs, PlanCommandArgs};
use crate::error::{Error, Exit};
use crate::plan::Plan;
use crate::settings::Workspace;
use crate::ui::{OutputFormat, Ui};

pub async fn run(
    global: &GlobalArgs,
    args: &PlanCommandArgs,
    ui: &Ui,
    actions: ActionsEnv,
) -> Result<Exit, Error> {
    let ws = Workspace::load(global, &args.plan, actions)?;
    ws.announce(ui);
    let key = ws.cache_key(&args.cache_key_prefix)?;
    if let Some(path) = &ws.actions.output {
        let text = crate::report::outputs::render(&[
            ("cache-key".to_string(), key.key.clone()),
            (
                "cache-restore-keys".to_string(),
                key.restore_keys.join("\n"),
            ),
        ]);
        crate::report::outputs::append(path, &text).map_err(|e| Error::Environment {
            what: format!("GITHUB_OUTPUT ({})", path.display()),
            reason: e.to_string(),
        })?;
    }
    let plan = &ws.plan;
    if args.matrix {
        let n = match (args.shards, args.max_per_shard) {
            (Some(n), _) => n,
            (None, Some(k)) => crate::matrix::shards_for_max(plan.services.len(), k),
            (None, None) => 1,
        };
        let weights = ws.shard_weights(args.plan.durations.as_deref())?;
        let include = crate::matrix::shard(&plan.graph, &weights, n);
        ui.result(&crate::ui::inert_json(
            &serde_json::to_string(&crate::matrix::Matrix { include }).unwrap_or_default(),
        ));
        return Ok(Exit::Success);
    }
    match ui.format {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(plan).unwrap_or_default();
            value["cache_key"] = serde_json::to_value(&key).unwrap_or_default();
            ui.json(&value)
        }
        OutputFormat::Human => ui.result(&format!(
            "{}\nCache key: {}\n  restore keys: {}",
            render(plan),
            key.key,
            key.restore_keys.join(", ")
        )),
    }
    Ok(Exit::Success)
}

fn render(plan: &Plan) -> String {
    let mut out = String::new();
    if let Some(reader) = &plan.reader {
        out.push_str(&format!("Read by {reader}\n"));
        if !plan.files.is_empty() {
            out.push_str(&format!("  files: {}\n", plan.files.join(", ")));
        }
        if !plan.env_files.is_empty() {
            out.push_str(&format!("  env files: {}\n", plan.env_files.join(", ")));
        }
    }
    out.push_str(&format!(
        "Services ({}, from {}; images {}<service>:{}, tag from {}):\n",
        plan.services.len(),
        plan.source,
        plan.naming.prefix,
        plan.naming.tag,
        plan.naming.tag_source
    ));
    for name in &plan.order {
        let Some(s) = plan.services.iter().find(|s| &s.name == name) else {
            continue;
        };
        let deps = if s.depends_on.is_empty() {
            String::new()
        } else {
            format!("  after {}", s.depends_on.join(", "))
        };
        let aliases = if s.aliases.is_empty() {
            String::new()
        } else {
            format!("  also {} (same build)", s.aliases.join(", "))
        };
        out.push_str(&format!(
            "  {:<20} {}  {}  [{}]{deps}{aliases}\n",
            s.name, s.image, s.dockerfile, s.origin
        ));
        if let Some(error) = &s.error {
            out.push_str(&format!(
                "  {:<20} cannot be built: {}\n",
                "",
                crate::text::clean_line(&error.to_string(), 2000)
            ));
        }
    }
    out.push_str(&format!(
        "Base images to prefetch ({}):\n",
        plan.base_images.len()
    ));
    for need in &plan.base_images {
        let uses: Vec<String> = need
            .uses
            .iter()
            .map(|u| format!("{}:{}", PathBuf::from(&u.dockerfile).display(), u.line))
            .collect();
        out.push_str(&format!("  {}  <- {}\n", need.reference, uses.join(", ")));
    }
    out.trim_end().to_string()
}
