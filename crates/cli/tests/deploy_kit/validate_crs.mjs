// Validates prometheus-operator resources (ServiceMonitor, PrometheusRule) against the
// OpenAPI schemas of the operator's CRDs, as compiled into the npm package
// @kubernetes-models/prometheus-operator (installed by scripts/install-deps). Reads a JSON
// array of resources on stdin; prints one line per resource ("ok KIND/NAME" or
// "invalid KIND/NAME: why") and exits 1 if any is invalid or of an unknown kind.
// Usage: node validate_crs.mjs NODE_MODULES_DIR < resources.json
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const v1 = await import(
  pathToFileURL(join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js")).href
);
const resources = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const resource of resources) {
  const name = `${resource.kind}/${resource.metadata?.name}`;
  const Model = resource.apiVersion === "monitoring.coreos.com/v1" ? v1[resource.kind] : undefined;
  if (!Model) {
    console.log(`invalid ${name}: no model for ${resource.apiVersion} ${resource.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok ${name}`);
  } catch (err) {
    console.log(`invalid ${name}: ${err.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
