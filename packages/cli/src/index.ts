/**
 * berth: a ctr-style command line for berth.
 *
 * @packageDocumentation
 */

export {};
