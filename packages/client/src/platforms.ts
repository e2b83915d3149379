import { invalidArgument } from "@berth/errdefs";
import {
  allPlatforms,
  hostPlatform,
  onlyPlatform,
  type PlatformMatcher,
  parsePlatform,
  platformMatcher,
} from "@berth/images";

/** How a command chose platforms: a list of matchers to apply one after another, or all of them. */
export interface PlatformChoice {
  readonly all: boolean;
  /** One matcher per requested platform (the host's when none was requested). */
  readonly matchers: readonly PlatformMatcher[];
  /** A single matcher that accepts any requested platform, for walks and exports. */
  readonly any: PlatformMatcher;
}

/**
 * Turns `--platform` / `--all-platforms` style options into matchers. Platform strings use the
 * OCI `os/arch[/variant]` form; a malformed one is `invalid-argument`. By default a platform also
 * matches what it can run (containerd's `platforms.Only`: arm64 takes arm/v7 too), as pull and
 * unpack want; with `strict` only the platform itself (`platforms.OnlyStrict`), as `ctr images
 * export` does.
 */
export function choosePlatforms(
  options: {
    platforms?: readonly string[];
    allPlatforms?: boolean;
  },
  { strict = false }: { readonly strict?: boolean } = {},
): PlatformChoice {
  if (options.allPlatforms) return { all: true, matchers: [allPlatforms], any: allPlatforms };
  const requested = options.platforms ?? [];
  const matcherOf = strict ? onlyPlatform : platformMatcher;
  if (requested.length === 0) {
    const host = strict ? onlyPlatform(hostPlatform()) : platformMatcher();
    return { all: false, matchers: [host], any: host };
  }
  const matchers = requested.map((text) => {
    try {
      return matcherOf(parsePlatform(text));
    } catch (cause) {
      throw invalidArgument(`invalid platform "${text}": expected os/arch[/variant], e.g. linux/arm64/v8`, {
        cause,
      });
    }
  });
  const any: PlatformMatcher = {
    match: (p) => matchers.some((m) => m.match(p)),
    less: (a, b) => {
      // Order by the first requested platform each one matches, then by that matcher's preference.
      const rank = (p: typeof a) => matchers.findIndex((m) => m.match(p));
      const ra = rank(a);
      const rb = rank(b);
      if (ra !== rb) return ra >= 0 && (rb < 0 || ra < rb);
      const m = matchers[ra];
      return m ? m.less(a, b) : false;
    },
  };
  return { all: false, matchers, any };
}
