/**
 * Typed berth client; embedded mode works in-process over the stores, with no daemon.
 *
 * @packageDocumentation
 */

export {};
