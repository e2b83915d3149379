import { type Descriptor, Labels } from "@berth/content";
import { isConfigMediaType, isIndexMediaType, isLayerMediaType, isManifestMediaType } from "./media-types.js";

/**
 * The garbage-collection labels that tie a parent blob to its children, following containerd:
 * for a manifest parent, `containerd.io/gc.ref.content.config` for its config (the first child)
 * and `….l.<i>` for layers; for an index parent (or any other), `….m.<i>` for manifests and
 * indexes, `….l.<i>` for layers, `….config` for a config and `….<i>` for anything else. `<i>` is
 * the child's position in `children`, so a manifest's first layer is `l.1`, as in containerd.
 * `children` is what {@link childrenOf} (possibly filtered) returned for `parent`.
 */
export function gcChildLabels(parent: Descriptor, children: readonly Descriptor[]): Record<string, string> {
  const labels: Record<string, string> = {};
  const manifestParent = isManifestMediaType(parent.mediaType);
  children.forEach((child, i) => {
    const mt = child.mediaType;
    let key: string;
    if ((manifestParent && i === 0) || (!manifestParent && isConfigMediaType(mt)))
      key = `${Labels.GcRefContent}.config`;
    else if (isLayerMediaType(mt)) key = `${Labels.GcRefContent}.l.${i}`;
    else if (!manifestParent && (isManifestMediaType(mt) || isIndexMediaType(mt)))
      key = `${Labels.GcRefContent}.m.${i}`;
    else key = `${Labels.GcRefContent}.${i}`;
    labels[key] = child.digest;
  });
  return labels;
}

/** The label key recording that a blob came from registry `host`. */
export function distributionSourceKey(host: string): string {
  return `${Labels.DistributionSource}.${host}`;
}

/**
 * The label recording where a blob was fetched from: `{"containerd.io/distribution.source.<host>":
 * "<repository>"}`. With `existing` (the label's current value, a comma-separated list) the
 * repository is added to the list, sorted and without duplicates, as containerd does.
 */
export function distributionSourceLabel(
  host: string,
  repository: string,
  existing?: string,
): Record<string, string> {
  const repos = new Set((existing ?? "").split(",").filter((r) => r !== ""));
  repos.add(repository);
  return { [distributionSourceKey(host)]: [...repos].sort().join(",") };
}
