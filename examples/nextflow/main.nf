#!/usr/bin/env nextflow
/*
 * genomelm in Nextflow: score the variants of a VCF and embed its reference, with the nf-core-style
 * modules in modules/local/genomelm/. Settings (model, extra options, GPU profile) are in nextflow.config.
 *
 *   nextflow run main.nf --vcf calls.vcf.gz --fasta ref.fa --model /models/small-32k
 *   nextflow run main.nf -profile gpu --vcf calls.vcf.gz --fasta ref.fa --model /models/small-32k
 *   nextflow run main.nf -stub --vcf calls.vcf.gz --fasta ref.fa      # the wiring only, no model run
 */
nextflow.enable.dsl = 2

include { GENOMELM_SCOREVARIANTS } from './modules/local/genomelm/scorevariants/main'
include { GENOMELM_EMBED         } from './modules/local/genomelm/embed/main'

workflow {
    if (!params.vcf || !params.fasta) {
        error "Give --vcf (bgzipped, with a .tbi or .csi index) and --fasta"
    }
    def vcf   = file(params.vcf, checkIfExists: true)
    def tbi   = file("${params.vcf}.tbi").exists() ? file("${params.vcf}.tbi") : file("${params.vcf}.csi", checkIfExists: true)
    def fasta = file(params.fasta, checkIfExists: true)
    def fai   = file("${params.fasta}.fai").exists() ? file("${params.fasta}.fai") : []
    def model = params.model ? file(params.model, checkIfExists: true) : []

    ch_vcf   = Channel.of([ [ id: vcf.simpleName ], vcf, tbi ])
    ch_fasta = Channel.value([ [ id: fasta.simpleName ], fasta, fai ])

    GENOMELM_SCOREVARIANTS(ch_vcf, ch_fasta, model)
    GENOMELM_EMBED(ch_fasta.map { meta, fa, _fai -> [ meta, fa ] }, model)

    GENOMELM_SCOREVARIANTS.out.versions
        .mix(GENOMELM_EMBED.out.versions)
        .collectFile(name: 'versions.yml', storeDir: "${params.outdir}/pipeline_info")
}
