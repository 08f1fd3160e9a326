//! The plan: which base images the services need, and where each is referenced.
//! Computed before any work, so bad Dockerfiles stop the run with nothing done.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dockerfile::{self, BuildContextArgs};
use crate::error::Error;
use crate::prefetch::{ImageNeed, Use};
use crate::project::Project;
use crate::reference::Reference;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub source: String,
    pub services: Vec<ServicePlan>,
    /// External images to prefetch, deduplicated across services.
    pub base_images: Vec<ImageNeed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub name: String,
    pub dockerfile: String,
    pub origin: String,
    /// Canonical references of the external images this service's Dockerfile names.
    pub base_images: Vec<String>,
}

/// Parses every service's Dockerfile and collects its external images. `extra_args` are
/// `--build-arg`s that apply to every service (a service's own build args win).
pub fn plan(project: &Project, extra_args: &BTreeMap<String, String>) -> Result<Plan, Error> {
    let mut needs: BTreeMap<Reference, Vec<Use>> = BTreeMap::new();
    let mut services = Vec::new();
    for service in &project.services {
        let path = &service.dockerfile;
        let shown = path
            .strip_prefix(&project.root)
            .unwrap_or(path)
            .to_path_buf();
        let content = std::fs::read_to_string(path).map_err(|e| Error::Input {
            input: shown.display().to_string(),
            reason: format!(
                "cannot read the Dockerfile of service {:?}: {e}",
                service.name
            ),
        })?;
        let mut args = extra_args.clone();
        args.extend(service.build_args.clone());
        let parsed = dockerfile::parse(&content, &BuildContextArgs::new(&args)).map_err(|e| {
            Error::Input {
                input: shown.display().to_string(),
                reason: format!("{e} (service {:?})", service.name),
            }
        })?;
        let mut mine = Vec::new();
        for image in parsed.images {
            mine.push(image.reference.to_string());
            needs.entry(image.reference).or_default().push(Use {
                dockerfile: shown.clone(),
                line: image.line,
            });
        }
        mine.dedup();
        services.push(ServicePlan {
            name: service.name.clone(),
            dockerfile: shown.display().to_string(),
            origin: service.origin.clone(),
            base_images: mine,
        });
    }
    let base_images = needs
        .into_iter()
        .map(|(reference, mut uses)| {
            uses.sort();
            uses.dedup();
            ImageNeed { reference, uses }
        })
        .collect();
    Ok(Plan {
        source: project.source.clone(),
        services,
        base_images,
    })
}
