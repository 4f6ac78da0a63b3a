process GENOMELM_SCOREVARIANTS {
    tag "$meta.id"
    label 'process_medium'

    // genomelm is not on Bioconda/BioContainers yet: run where `genomelm` is on PATH (a conda/venv
    // environment with `pip install genomelm`), or set `container` for this process in your config.

    input:
    tuple val(meta), path(vcf), path(tbi)       // bgzipped VCF (or BCF) + index; the index is needed for --regions
    tuple val(meta2), path(fasta), path(fai)    // reference FASTA (plain or bgzip) + .fai ([] to build it)
    path model                                   // checkpoint directory; [] = the default, or `--model NAME` in ext.args

    output:
    tuple val(meta), path("*.vcf.gz")    , emit: vcf
    tuple val(meta), path("*.vcf.gz.tbi"), emit: tbi
    path "versions.yml"                  , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args      = task.ext.args ?: ''
    def prefix    = task.ext.prefix ?: "${meta.id}.scored"
    def model_arg = model ? "--model ${model}" : ''
    if ("${vcf}" == "${prefix}.vcf.gz") error "Input and output names are the same, set prefix in module configuration to disambiguate!"
    """
    genomelm \\
        score-variants \\
        ${vcf} \\
        --fasta ${fasta} \\
        --output ${prefix}.vcf.gz \\
        --index \\
        --threads ${task.cpus} \\
        ${model_arg} \\
        ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        genomelm: \$(genomelm --version)
    END_VERSIONS
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}.scored"
    """
    echo "" | gzip > ${prefix}.vcf.gz
    touch ${prefix}.vcf.gz.tbi

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        genomelm: \$(genomelm --version)
    END_VERSIONS
    """
}
