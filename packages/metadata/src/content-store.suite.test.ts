import { contentSuite } from "@berth/content/testsuite";
import { openSuiteStore } from "./testing/suite-store.js";

contentSuite("metadata namespaced view over the local store", openSuiteStore, {
  peer: { module: new URL("./testing/suite-store.ts", import.meta.url).href, exportName: "openSuiteStore" },
});
