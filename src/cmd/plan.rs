//! `plan`: the resolved services, their images, dependency order and base images (or a
//! matrix for GitHub Actions), and the cache key as step outputs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::actions_env::ActionsEnv;
use crate::build::inputs::RunInputs;
use crate::build::reuse::Verdict;
use crate::cli::{GlobalArgs, PlanCommandArgs, RegistryCheckArgs, flatten};
use crate::error::{Error, Exit};
use crate::plan::Plan;
use crate::prefetch::{PrefetchOptions, PullPolicy, PullVia};
use crate::retry::RetryPolicy;
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
    let reuse = if args.registry.check_registry {
        Some(check_registry(&ws, &args.registry, ui).await?)
    } else {
        None
    };
    // Issue 15: the diff alone, when the registry is not asked.
    let changed = if reuse.is_none() {
        changed_since(&ws, &args.registry, ui)?
    } else {
        None
    };
    if let (Some(reuse), Some(path)) = (&reuse, &ws.actions.output) {
        let text = crate::report::outputs::render(&[(
            "images".to_string(),
            images_output(plan, reuse).to_string(),
        )]);
        crate::report::outputs::append(path, &text).map_err(|e| Error::Environment {
            what: format!("GITHUB_OUTPUT ({})", path.display()),
            reason: e.to_string(),
        })?;
    }
    if args.matrix {
        let n = match (args.shards, args.max_per_shard) {
            (Some(n), _) => n,
            (None, Some(k)) => crate::matrix::shards_for_max(plan.services.len(), k),
            (None, None) => 1,
        };
        let mut weights = ws.shard_weights(args.plan.durations.as_deref())?;
        let include = match &reuse {
            None => crate::matrix::shard(&plan.graph, &weights, n),
            Some(reuse) => {
                for (i, w) in weights.iter_mut().enumerate() {
                    if reuse.is_reused(i) {
                        *w = 0.0;
                    }
                }
                let jobs = jobs_to_build(plan, &weights, n, reuse);
                ui.result(&crate::ui::inert_json(
                    &serde_json::json!({ "include": jobs }).to_string(),
                ));
                return Ok(Exit::Success);
            }
        };
        ui.result(&crate::ui::inert_json(
            &serde_json::to_string(&crate::matrix::Matrix { include }).unwrap_or_default(),
        ));
        return Ok(Exit::Success);
    }
    match ui.format {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(plan).unwrap_or_default();
            value["cache_key"] = serde_json::to_value(&key).unwrap_or_default();
            if let Some(changed) = &changed {
                value["changed_since"] = serde_json::json!({
                    "ref": changed.reference,
                    "changed": changed
                        .changed
                        .iter()
                        .map(|(i, why)| (plan.services[*i].name.clone(), why.clone()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                });
            }
            if let Some(reuse) = &reuse {
                value["reuse"] = serde_json::to_value(
                    reuse
                        .decisions
                        .values()
                        .map(|d| (d.service.clone(), d))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                )
                .unwrap_or_default();
            }
            ui.json(&value)
        }
        OutputFormat::Human => ui.result(&format!(
            "{}\nCache key: {}\n  restore keys: {}{}",
            render(plan),
            key.key,
            key.restore_keys.join(", "),
            reuse
                .as_ref()
                .map(|r| render_reuse(plan, r))
                .or_else(|| changed.as_ref().map(|c| render_changed(plan, c)))
                .unwrap_or_default()
        )),
    }
    Ok(Exit::Success)
}

/// Issue 15: per service, build or reuse and why, from the registry; with `--push` the
/// reused services get this run's tags.
async fn check_registry(
    ws: &Workspace,
    args: &RegistryCheckArgs,
    ui: &Ui,
) -> Result<crate::build::reuse::RunReuse, Error> {
    let credentials = crate::auth::Credentials::from_env().map_err(|err| Error::Input {
        input: "docker credentials".to_string(),
        reason: format!("{err}; {}", err.help()),
    })?;
    let options = PrefetchOptions {
        concurrency: 4,
        policy: RetryPolicy::default(),
        idle_timeout: Duration::from_secs(60),
        mirrors: crate::settings::mirrors(Some(&ws.project), &args.mirror.mirrors)?,
        mirror_first: args.mirror.mirror_first || ws.project.settings.mirror_first.unwrap_or(false),
        pull: PullPolicy::Missing,
        via: PullVia::Auto,
        notify: None,
        health: None,
        credentials: std::sync::Arc::new(credentials),
    };
    let store = crate::build::reuse::Store::new(&options).map_err(|e| Error::Environment {
        what: "the registry client".into(),
        reason: e.to_string(),
    })?;
    let inputs = RunInputs::new(
        crate::settings::build_arg_map(&args.image.labels()),
        args.image.platforms(),
        args.image.secret_ids(),
        &flatten(&args.image.ssh),
    );
    let all: BTreeSet<usize> = (0..ws.plan.services.len()).collect();
    let changed = changed_since(ws, args, ui)?;
    let reuse = crate::build::reuse::RunReuse::prepare(
        store,
        &ws.plan,
        &all,
        &inputs,
        true,
        true,
        changed.as_ref(),
    )
    .await;
    if args.push {
        for (&i, d) in &reuse.decisions {
            if d.is_reuse()
                && let Err(err) = reuse.tag(&ws.plan, i, &mut |_| {}).await
            {
                ui.warn(&crate::text::clean_line(
                    &format!("{}: {err}; its build job will tag it", d.service),
                    400,
                ));
            }
        }
    }
    Ok(reuse)
}

/// `--changed-since` (or on pull requests the base commit): which services the diff touches.
fn changed_since(
    ws: &Workspace,
    args: &RegistryCheckArgs,
    ui: &Ui,
) -> Result<Option<crate::build::changed::ChangedSince>, Error> {
    let wanted = crate::settings::changed_since(args.changed_since.as_deref(), &ws.actions);
    let (changed, why_not) = crate::settings::changed_services(ws, wanted.as_ref())?;
    if let Some(why_not) = why_not {
        ui.note(&crate::text::clean_line(&why_not, 400));
    }
    Ok(changed)
}

/// Without `--check-registry`: per service, changed (built) or unchanged (reused when the
/// registry or the cache has its image, else built).
fn render_changed(plan: &Plan, changed: &crate::build::changed::ChangedSince) -> String {
    let mut out = format!("\nChanged since {}:\n", changed.reference);
    for name in &plan.order {
        let Some(i) = plan.services.iter().position(|s| &s.name == name) else {
            continue;
        };
        let text = match changed.why(i) {
            Some(why) => format!("build: {why} [changed-since]"),
            None => "unchanged: reused when the registry or the cache has its image, else built"
                .to_string(),
        };
        out.push_str(&format!("  {name:<20} {text}\n"));
    }
    out.trim_end().to_string()
}

/// The `images` output: every service with its reference, tags and (when reused) the
/// registry's digest.
fn images_output(plan: &Plan, reuse: &crate::build::reuse::RunReuse) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (i, s) in plan.services.iter().enumerate() {
        let d = reuse.decisions.get(&i);
        let digest = d.and_then(|d| match &d.verdict {
            Verdict::Reuse { digest, .. } => Some(digest.clone()),
            Verdict::Build { .. } => None,
        });
        map.insert(
            s.name.clone(),
            serde_json::json!({
                "ref": s.image,
                "tags": std::iter::once(&s.image).chain(&s.tags).collect::<Vec<_>>(),
                "digest": digest,
                "reused": d.is_some_and(|d| d.is_reuse()),
            }),
        );
    }
    serde_json::Value::Object(map)
}

/// The matrix of jobs when the registry was asked: shards over the services to build only
/// (every chain whole), numbered anew; each job builds `--only <services>` (a reused
/// dependency is then tagged and pulled in that job). Empty when everything is reused.
fn jobs_to_build(
    plan: &Plan,
    weights: &[f64],
    n: usize,
    reuse: &crate::build::reuse::RunReuse,
) -> Vec<serde_json::Value> {
    let shards = crate::matrix::shard(&plan.graph, weights, n);
    let kept: Vec<Vec<usize>> = shards
        .into_iter()
        .map(|s| {
            s.members
                .into_iter()
                .filter(|&m| !reuse.is_reused(m))
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    let total = kept.len();
    kept.into_iter()
        .enumerate()
        .map(|(j, members)| {
            serde_json::json!({
                "job": format!("{}/{total}", j + 1),
                "index": j + 1,
                "total": total,
                "services": members
                    .iter()
                    .map(|m| plan.services[*m].name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                "weight": members.iter().map(|m| weights[*m]).sum::<f64>(),
            })
        })
        .collect()
}

fn render_reuse(plan: &Plan, reuse: &crate::build::reuse::RunReuse) -> String {
    let mut out = String::from("\nRegistry (build inputs):\n");
    for name in &plan.order {
        let Some(d) = reuse.decisions.values().find(|d| &d.service == name) else {
            continue;
        };
        out.push_str(&format!("  {:<20} {}\n", d.service, d.describe()));
    }
    out.trim_end().to_string()
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
        let platform = need
            .platform
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}{platform}  <- {}\n",
            need.reference,
            uses.join(", ")
        ));
    }
    out.trim_end().to_string()
}
